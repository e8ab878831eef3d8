//! nstest.
