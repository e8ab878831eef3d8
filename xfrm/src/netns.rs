//! Network-namespace selection.
//!
//! House rule (aesthetics §4.6.7): a socket for another namespace is opened on a dedicated OS
//! thread that has `setns()`'d into the target; the socket stays bound to that namespace for its
//! whole life (netlink sockets keep the netns they were created in), so it can then be used from
//! any thread or task. Async tasks never change namespace, because tokio moves tasks between
//! threads and a task would silently continue in whatever namespace its worker happens to be in.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};

use crate::error::{Error, Result};

/// Which network namespace a handle, monitor or sysctl write acts in.
#[derive(Debug, Default)]
pub enum Netns {
    /// The namespace of the calling thread at the time the handle is opened.
    #[default]
    Current,
    /// A namespace file, e.g. `/run/netns/NAME` or `/proc/PID/ns/net`.
    Path(PathBuf),
    /// An open namespace file descriptor.
    Fd(OwnedFd),
}

impl Netns {
    /// The namespace named `name` as created by `ip netns add NAME` (`/run/netns/NAME`).
    pub fn named(name: &str) -> Self {
        Netns::Path(PathBuf::from("/run/netns").join(name))
    }

    /// Duplicates the selector (a new fd for [`Netns::Fd`]).
    pub fn try_clone(&self) -> Result<Self> {
        Ok(match self {
            Netns::Current => Netns::Current,
            Netns::Path(p) => Netns::Path(p.clone()),
            Netns::Fd(fd) => Netns::Fd(fd.try_clone().map_err(|e| Error::Io {
                op: "duplicate netns fd",
                source: e,
            })?),
        })
    }

    fn describe(&self) -> String {
        match self {
            Netns::Current => "current".into(),
            Netns::Path(p) => p.display().to_string(),
            Netns::Fd(_) => "fd".into(),
        }
    }

    /// Runs `f` on a fresh OS thread that has entered this namespace, and returns its result.
    ///
    /// For [`Netns::Current`] `f` runs on the calling thread, which keeps the namespace of
    /// whoever called (tests `unshare(CLONE_NEWNET)` on their own thread and rely on that).
    /// The helper thread exits after `f`, so no thread is ever left in a foreign namespace.
    pub fn run<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send,
        T: Send,
    {
        let target: OwnedFd = match self {
            Netns::Current => return f(),
            Netns::Path(p) => File::open(p)
                .map_err(|e| Error::Netns {
                    target: self.describe(),
                    errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                })?
                .into(),
            Netns::Fd(fd) => fd.try_clone().map_err(|e| Error::Netns {
                target: self.describe(),
                errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
            })?,
        };
        let desc = self.describe();
        std::thread::scope(|s| {
            s.spawn(move || {
                setns(target.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| Error::Netns {
                    target: desc,
                    errno,
                })?;
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }
}
