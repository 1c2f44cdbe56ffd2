"""Local stack: runs template.yaml's functions, Function URLs and AWS services on one machine."""
