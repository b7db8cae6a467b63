//! Writing the output tree and `index.json` atomically.
