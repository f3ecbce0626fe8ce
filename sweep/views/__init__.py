"""What people look at: the atlas site, the paper's figures and tables, from a results root."""
