"""``sessionctl``: the operators' and developers' command line."""
