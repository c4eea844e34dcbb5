//! Cassette format, builder, writer and reader.
