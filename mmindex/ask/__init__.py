"""`mmindex ask`: retrieve, then answer from the retrieved images through a projector and a
causal LM, with citations."""
