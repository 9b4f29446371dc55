"""HTML and CSS templates of the offline report (package data)."""
