"""Where replies come from: scripted rules, an echo, a real upstream model."""
