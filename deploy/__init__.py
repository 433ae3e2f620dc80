"""How the platform is run: the `shop` command, the native local stack, the compose file."""
