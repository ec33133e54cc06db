"""What the benchmark suites share. Modules here import only the standard library at the
top where a child process imports them (``child``, ``memory``, ``probe``), so that the
memory a child reports is the work's, not the benchmark's."""
