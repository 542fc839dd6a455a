//! The proxy's own clients, for CLIENT LIST, KILL and UNBLOCK: each
//! session registers while it lives. Nothing here is on a request's path: a
//! session touches its entry only when its name, user or protocol changes.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// One client, as CLIENT LIST shows it.
#[derive(Debug)]
pub struct ClientEntry {
    /// CLIENT ID.
    pub id: u64,
    /// The client's address (`PATH:0` for the Unix socket).
    pub addr: String,
    /// The proxy's address it connected to.
    pub laddr: String,
    /// Connected through the Unix socket.
    pub unix: bool,
    /// When it connected.
    pub connected: Instant,
    name: Mutex<Option<Bytes>>,
    user: Mutex<Option<String>>,
    /// CLIENT SETINFO LIB-NAME and LIB-VER.
    lib: Mutex<(Option<String>, Option<String>)>,
    resp3: AtomicBool,
    /// The last command (its [`intern_command`] number; 0 before the
    /// first), and when it was read, in ms after `connected`: CLIENT
    /// LIST's `cmd` and `idle`. One relaxed store each per request.
    last_command: AtomicU32,
    last_ms: AtomicU64,
    /// Cancelled by CLIENT KILL: the session ends as on shutdown (the
    /// requests it read are answered, then the connection closes).
    kill: CancellationToken,
    /// Set while the client waits in a blocking command or WAIT.
    blocked: AtomicBool,
    /// CLIENT UNBLOCK's request (an [`Unblock`] as u8, 0 for none; kept
    /// until the wait ends) and its wake-up.
    unblock: AtomicU8,
    unblocked: Notify,
}

/// How CLIENT UNBLOCK ends a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unblock {
    /// As if the command's timeout had passed.
    Timeout = 1,
    /// With an UNBLOCKED error.
    Error = 2,
}

impl ClientEntry {
    /// A client whose session stops when `kill` is cancelled.
    pub fn new(id: u64, addr: String, laddr: String, unix: bool, kill: CancellationToken) -> Self {
        ClientEntry {
            id,
            addr,
            laddr,
            unix,
            connected: Instant::now(),
            name: Mutex::new(None),
            user: Mutex::new(None),
            lib: Mutex::new((None, None)),
            resp3: AtomicBool::new(false),
            last_command: AtomicU32::new(0),
            last_ms: AtomicU64::new(0),
            kill,
            blocked: AtomicBool::new(false),
            unblock: AtomicU8::new(0),
            unblocked: Notify::new(),
        }
    }

    /// CLIENT SETNAME's name.
    pub fn name(&self) -> Option<Bytes> {
        self.name.lock().expect("client lock").clone()
    }

    /// The authenticated user, if any.
    pub fn user(&self) -> Option<String> {
        self.user.lock().expect("client lock").clone()
    }

    /// CLIENT SETINFO LIB-NAME and LIB-VER.
    pub fn lib(&self) -> (Option<String>, Option<String>) {
        self.lib.lock().expect("client lock").clone()
    }

    /// Sets LIB-NAME (`name`) or LIB-VER.
    pub fn set_lib(&self, name: bool, value: String) {
        let mut lib = self.lib.lock().expect("client lock");
        if name {
            lib.0 = Some(value);
        } else {
            lib.1 = Some(value);
        }
    }

    /// Records a request: its command (an [`intern_command`] number),
    /// read at `at`.
    pub fn note_command(&self, command: u32, at: Instant) {
        self.last_command.store(command, Ordering::Relaxed);
        let ms = at.saturating_duration_since(self.connected).as_millis();
        self.last_ms.store(ms as u64, Ordering::Relaxed);
    }

    /// The last command's name, if any (CLIENT LIST's `cmd`).
    pub fn last_command(&self) -> Option<String> {
        command_name(self.last_command.load(Ordering::Relaxed))
    }

    /// Seconds since the last request (or since connecting).
    pub fn idle_secs(&self) -> u64 {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.connected.elapsed().saturating_sub(last).as_secs()
    }

    /// Records the client's new name.
    pub fn set_name(&self, name: Option<Bytes>) {
        *self.name.lock().expect("client lock") = name;
    }

    /// Records the client's user.
    pub fn set_user(&self, user: Option<String>) {
        *self.user.lock().expect("client lock") = user;
    }

    /// Records the client's protocol.
    pub fn set_resp3(&self, resp3: bool) {
        self.resp3.store(resp3, Ordering::Relaxed);
    }

    /// Whether the client speaks RESP3.
    pub fn resp3(&self) -> bool {
        self.resp3.load(Ordering::Relaxed)
    }

    /// Ends the client's session.
    pub fn kill(&self) {
        self.kill.cancel();
    }

    /// Marks the client as waiting in a blocking command (or no longer),
    /// which CLIENT UNBLOCK may end. A request left from an earlier wait
    /// is dropped.
    pub fn set_blocked(&self, blocked: bool) {
        self.unblock.store(0, Ordering::Relaxed);
        self.blocked.store(blocked, Ordering::Release);
    }

    /// CLIENT UNBLOCK: whether the client was blocked (it is told how to
    /// end its wait).
    pub fn unblock(&self, how: Unblock) -> bool {
        if !self.blocked.load(Ordering::Acquire) {
            return false;
        }
        self.unblock.store(how as u8, Ordering::Release);
        self.unblocked.notify_waiters();
        true
    }

    /// Resolves when CLIENT UNBLOCK asks this client to end its wait (for
    /// every waiter: WAIT waits on each master at once).
    pub async fn unblocked(&self) -> Unblock {
        loop {
            let woken = self.unblocked.notified();
            tokio::pin!(woken);
            // Registered before the check, so a request in between wakes it.
            woken.as_mut().enable();
            match self.unblock.load(Ordering::Acquire) {
                1 => return Unblock::Timeout,
                2 => return Unblock::Error,
                _ => woken.await,
            }
        }
    }
}

/// Command names by number, for [`ClientEntry::note_command`]: a request
/// stores a number, and only CLIENT LIST takes the lock.
static COMMANDS: Mutex<Option<Interned>> = Mutex::new(None);

/// Numbers by name, and names by number (less one).
type Interned = (HashMap<String, u32>, Vec<String>);

/// The number of a command name (from 1; the same name keeps its number
/// across command-table refreshes).
pub fn intern_command(name: &str) -> u32 {
    let mut guard = COMMANDS.lock().expect("commands lock");
    let (by_name, names) = guard.get_or_insert_with(Default::default);
    if let Some(&n) = by_name.get(name) {
        return n;
    }
    names.push(name.to_string());
    let n = names.len() as u32;
    by_name.insert(name.to_string(), n);
    n
}

/// The name of an [`intern_command`] number.
fn command_name(n: u32) -> Option<String> {
    let guard = COMMANDS.lock().expect("commands lock");
    let (_, names) = guard.as_ref()?;
    names.get(n.checked_sub(1)? as usize).cloned()
}

/// Every connected client.
#[derive(Debug, Default)]
pub struct Clients {
    map: Mutex<BTreeMap<u64, Arc<ClientEntry>>>,
}

/// A client's place in [`Clients`], given up when dropped.
pub struct Registration {
    clients: Arc<Clients>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.clients
            .map
            .lock()
            .expect("clients lock")
            .remove(&self.id);
    }
}

impl Clients {
    /// Registers a client until the returned registration is dropped.
    pub fn register(self: &Arc<Self>, entry: Arc<ClientEntry>) -> Registration {
        let id = entry.id;
        self.map.lock().expect("clients lock").insert(id, entry);
        Registration {
            clients: self.clone(),
            id,
        }
    }

    /// Every client, by id.
    pub fn all(&self) -> Vec<Arc<ClientEntry>> {
        self.map
            .lock()
            .expect("clients lock")
            .values()
            .cloned()
            .collect()
    }

    /// The client with this id.
    pub fn get(&self, id: u64) -> Option<Arc<ClientEntry>> {
        self.map.lock().expect("clients lock").get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_lasts_as_long_as_its_session() {
        let clients = Arc::new(Clients::default());
        let kill = CancellationToken::new();
        let entry = ClientEntry::new(7, "a:1".into(), "b:2".into(), false, kill.clone());
        let reg = clients.register(Arc::new(entry));
        clients
            .get(7)
            .unwrap()
            .set_name(Some(Bytes::from_static(b"n")));
        let all = clients.all();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].name().as_deref(), Some(&b"n"[..]));
        all[0].kill();
        assert!(kill.is_cancelled());
        drop(reg);
        assert!(clients.all().is_empty());
    }

    #[tokio::test]
    async fn unblock_reaches_only_a_blocked_client() {
        let clients = Arc::new(Clients::default());
        let entry = ClientEntry::new(
            1,
            "a:1".into(),
            "b:2".into(),
            false,
            CancellationToken::new(),
        );
        let _reg = clients.register(Arc::new(entry));
        let e = clients.get(1).expect("registered");
        assert!(!e.unblock(Unblock::Error), "not blocked");
        e.set_blocked(true);
        assert!(e.unblock(Unblock::Error));
        assert_eq!(e.unblocked().await, Unblock::Error);
        e.set_blocked(false);
        assert!(!e.unblock(Unblock::Timeout));
    }
}
