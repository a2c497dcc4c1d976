//! In-process tests of the SNS front end over an in-memory engine.
