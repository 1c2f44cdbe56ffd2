"""A signing backend in Flask: your users' login, Sigstream's Sign URL, the chat page (README.md)."""
