//! tower-stratum
