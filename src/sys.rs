//! The libc calls nfpg makes outside the receive backends, each behind a safe function.
//! This and `ingest::recv` are the only modules allowed `unsafe` (see ARCHITECTURE.md).
#![allow(unsafe_code)]

use std::ffi::CString;

/// Whether the process runs with effective uid 0.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of the system user `name`, if it exists.
pub fn user_ids(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    // SAFETY: getpwnam reads a NUL-terminated string and returns null or a pointer to static
    // storage, which is read immediately below, before any other passwd call. nfpg calls it
    // only while starting (from one thread).
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: a non-null result of getpwnam points at a valid passwd record (see above).
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Some((uid, gid))
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_exists_with_id_zero() {
        assert_eq!(super::user_ids("root"), Some((0, 0)));
        assert_eq!(super::user_ids("no such user nfpg"), None);
    }
}
