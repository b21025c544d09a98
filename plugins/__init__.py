"""segzoo's built-in plugins, loaded through the ``segzoo`` entry-point group like any third-party one."""
