"""The paper's claims checked exactly in the tabular world (`didray theory`): above `worlds`,
below `cli`."""
