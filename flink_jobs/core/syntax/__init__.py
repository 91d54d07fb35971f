"""Reading rule YAML: nodes with their positions (``nodes``), the help text of messages
(``help``), and the reader of the pieces conditions are made of (``reader``). The loader
(``core/loader``) reads files and segments with it, each construct (``core/conditions``) its own
condition."""
