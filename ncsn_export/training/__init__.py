"""Training score networks with annealed denoising score matching (``ncsn-train``)."""
