"""How results are shown: metric names, console and markdown tables, figures."""
