//! inxpect's rewriter.
