//! Empty on purpose: this library target lets `dvnet` name the eBPF crate as a
//! build-dependency (so cargo rebuilds when the programs change); the programs themselves
//! are the `dvnet` binary target, built for the BPF target by `dvnet/build.rs`.
#![no_std]
