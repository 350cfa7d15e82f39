"""Results tables and plots generated from exp dirs (the last stage of a recipe)."""
