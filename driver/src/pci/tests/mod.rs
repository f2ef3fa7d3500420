//! Tests of the sysfs parsing and the decisions made on it, against fake
//! sysfs trees. The real kernel path is tested in a QEMU guest.

mod bind;
mod fake;
mod read;
