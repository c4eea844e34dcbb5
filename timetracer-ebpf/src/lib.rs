//! Stub library target so the crate can be a build dependency; the programs are in the bin.
#![no_std]
use aya_ebpf as _;
use timetracer_common as _;
