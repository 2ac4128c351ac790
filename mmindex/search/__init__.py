"""Search over one index: text, image or vector queries, with SQL filters, into Hits."""
