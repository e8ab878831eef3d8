//! XFRM.
