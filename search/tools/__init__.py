"""User tools beside the search: a recipe's distillation teacher, rung fidelity."""
