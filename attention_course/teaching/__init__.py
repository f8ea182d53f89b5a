"""Course tooling, kept out of the concept modules: figures (``plotting``), live widgets
(``widgets``), the hand-made example sentences (``sentences``) and the static HTML build
(``html_build``). These import the concept modules; no concept module imports them."""
