//! Loading and attaching the kernel programs, and reading the ring buffer.
