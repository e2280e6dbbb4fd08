//! Shared types of sandpit: typed IDs, quantities, sandbox states and validation.
