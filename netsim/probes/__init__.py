"""Small stdlib-only programs run inside lab namespaces (servers and traffic generators)."""
