"""``make bench``: side-by-side load figures for authproxy, nginx and Apache + mod_auth_openidc."""
