"""Units of work without Ray: sweep plans, one batch end to end, one visualization job, costs."""
