//! The commands the relay serves, each one row: its name, arity (as Redis writes it: negative
//! means at least), group, where it may run (before AUTH, in subscribed mode, queued inside
//! MULTI), summary and arguments. The row makes the command's `Name` (what the dispatch matches
//! on), enforces its arity, and feeds COMMAND, COMMAND COUNT, INFO and DOCS.

/// Where a command may run besides an authenticated, plain connection.
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    /// Before AUTH.
    pub noauth: bool,
    /// In RESP2's subscribed mode.
    pub pubsub: bool,
    /// Queued by MULTI and run by EXEC.
    pub queued: bool,
}

impl Flags {
    const NONE: Flags = Flags {
        noauth: false,
        pubsub: false,
        queued: false,
    };
}

#[derive(Debug)]
pub struct Spec {
    pub name: &'static str,
    pub command: Name,
    pub arity: i64,
    pub group: &'static str,
    pub flags: Flags,
    pub summary: &'static str,
    /// Name and type of each argument.
    pub args: &'static [(&'static str, &'static str)],
}

impl Spec {
    /// Whether `n` words (the name included) fit the arity.
    pub fn arity_fits(&self, n: usize) -> bool {
        let n = n as i64;
        if self.arity >= 0 {
            n == self.arity
        } else {
            n >= -self.arity
        }
    }
}

macro_rules! commands {
    ($(
        $variant:ident $name:literal $arity:literal $group:literal [$($flag:ident),*]
        $summary:literal [$(($arg:literal, $kind:literal)),*];
    )+) => {
        /// A command the relay serves, looked up once from the name a client sent.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Name { $($variant),+ }

        pub static COMMANDS: &[Spec] = &[$(Spec {
            name: $name,
            command: Name::$variant,
            arity: $arity,
            group: $group,
            flags: Flags { $($flag: true,)* ..Flags::NONE },
            summary: $summary,
            args: &[$(($arg, $kind)),*],
        }),+];
    };
}

commands! {
    Auth "auth" -2 "connection" [noauth]
        "Authenticates the connection." [("username", "string"), ("password", "string")];
    Client "client" -2 "connection" [queued]
        "CLIENT SETNAME, GETNAME, ID, LIST, INFO, SETINFO, KILL." [("subcommand", "string")];
    Command "command" -1 "server" [queued]
        "The commands the relay serves." [("subcommand", "string")];
    Config "config" -2 "server" [queued]
        "CONFIG GET pattern, CONFIG REWRITE (keeps the master followed in --dir)."
        [("subcommand", "string"), ("pattern", "pattern")];
    Discard "discard" 1 "transactions" []
        "Discards the commands queued since MULTI." [];
    Echo "echo" 2 "connection" [queued] "Returns the message." [("message", "string")];
    Exec "exec" 1 "transactions" [] "Runs the commands queued since MULTI." [];
    Hello "hello" -1 "connection" [noauth]
        "Handshake; the relay speaks RESP2." [("protover", "integer")];
    Info "info" -1 "server" [queued]
        "The relay's facts, with Redis' field names." [("section", "string")];
    Multi "multi" 1 "transactions" []
        "Starts a transaction (as Sentinel re-points a replica)." [];
    Ping "ping" -1 "connection" [pubsub, queued] "Returns PONG." [("message", "string")];
    Psubscribe "psubscribe" -2 "pubsub" [pubsub]
        "Subscribes to channels matching patterns." [("pattern", "pattern")];
    Psync "psync" -3 "server" []
        "Starts a partial or full resync: the relay serves it from its store."
        [("replicationid", "string"), ("offset", "integer")];
    Publish "publish" 3 "pubsub" [queued]
        "Publishes a message to the relay's subscribers."
        [("channel", "string"), ("message", "string")];
    Punsubscribe "punsubscribe" -1 "pubsub" [pubsub]
        "Unsubscribes from patterns." [("pattern", "pattern")];
    Quit "quit" -1 "connection" [noauth, pubsub] "Closes the connection." [];
    Replconf "replconf" -1 "server" []
        "Replica settings during the handshake, and ACKs."
        [("option", "string"), ("value", "string")];
    Replicaof "replicaof" 3 "server" [queued]
        "Follows another master, or none (NO ONE)." [("host", "string"), ("port", "integer")];
    Role "role" 1 "server" [queued] "The relay's role, master and offset." [];
    Slaveof "slaveof" 3 "server" [queued]
        "Follows another master, or none (NO ONE)." [("host", "string"), ("port", "integer")];
    Subscribe "subscribe" -2 "pubsub" [pubsub] "Subscribes to channels." [("channel", "string")];
    Sync "sync" 1 "server" [] "The old full sync." [];
    Unsubscribe "unsubscribe" -1 "pubsub" [pubsub]
        "Unsubscribes from channels." [("channel", "string")];
}

/// The row of a command name, in any case.
pub fn find(name: &[u8]) -> Option<&'static Spec> {
    COMMANDS
        .iter()
        .find(|s| name.eq_ignore_ascii_case(s.name.as_bytes()))
}
