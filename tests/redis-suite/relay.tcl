# replica-relay in the chain of Redis' own replication tests (scripts/redis-suite).
#
# Every REPLICAOF/SLAVEOF <host> <port> a test sends is pointed at a relay attached to that
# master instead: one relay per master server, started on first use with a store of its own in
# the run's directory, stopped when the test block that started the master ends. REPLICAOF NO
# ONE, and a REPLICAOF that names a relay, go through as they are. The two other places where a
# test names a replica's master follow: CLIENT KILL <host>:<port> (how tests break a replica's
# link) kills the replica's link to the relay, and INFO's master_host/master_port give the
# master the test named (tests map that port back to one of their servers).
#
# Nothing of the suite is edited: this file is sourced by every tclsh the suite starts
# (scripts/redis-suite points TCL_LIBRARY at a directory whose init.tcl sources Tcl's own and
# then this), and it wraps the suite's procedures once the suite has defined them.

namespace eval ::relay {
    # master "host:port" -> {relay port, pid}
    variable relays
    array set relays {}
    variable wrapped 0
    variable count 0
}

# The relay for the master at host:port, started if there is none yet.
proc ::relay::port_for {host port} {
    variable relays
    set key "$host:$port"
    if {![info exists relays($key)]} {
        # A port found free can be taken by another process before the relay binds it: then
        # the relay says so and exits, and another port is tried.
        for {set try 0} {$try < 5} {incr try} {
            set started [::relay::start $host $port]
            if {$started ne {}} {
                set relays($key) $started
                break
            }
        }
        if {![info exists relays($key)]} {
            error "replica-relay for $key did not start: see $::env(RELAY_SUITE_DIR)"
        }
    }
    return [lindex $relays($key) 0]
}

# Starts a relay for host:port; {port pid} once it says it is ready, {} if its port was taken.
proc ::relay::start {host port} {
    set rport [find_available_port $::baseport $::portcount]
    set mport [find_available_port $::baseport $::portcount]
    # A directory of its own: a port is used again by later tests, a store must not be.
    variable count
    set dir [file join $::env(RELAY_SUITE_DIR) "relay-[pid]-[incr count]-$rport"]
    file mkdir $dir
    set log [file join $dir relay.log]
    set pid [exec $::env(RELAY_BIN) --bind 127.0.0.1 --port $rport --metrics-port $mport \
        --dir [file join $dir data] --replicaof $host $port --log-level info >> $log 2>@1 &]
    set fd [open [file join $::env(RELAY_SUITE_DIR) pids] a]
    puts $fd $pid
    close $fd
    for {set i 0} {$i < 200} {incr i} {
        set text [exec cat $log]
        if {[string match "*ready to accept replicas*" $text]} {
            return [list $rport $pid]
        }
        if {[string match "*Address already in use*" $text]} {
            catch {exec kill -9 $pid}
            return {}
        }
        if {[string match "*Fatal*" $text]} {
            error "replica-relay for $host:$port failed: $text"
        }
        after 50
    }
    error "replica-relay for $host:$port did not start in 10 s: see $log"
}

# The master "host:port" a relay port stands for, or {} if the port is no relay's.
proc ::relay::master_of {port} {
    variable relays
    foreach {key value} [array get relays] {
        if {[lindex $value 0] == $port} { return $key }
    }
    return {}
}

proc ::relay::is_relay {port} {
    expr {[::relay::master_of $port] ne {}}
}

# A command whose arguments name a replica's master by address names the relay in its place:
# REPLICAOF/SLAVEOF host port, and CLIENT KILL host:port (how tests break a replica's link).
proc ::relay::rewrite {method argv} {
    set method [string tolower $method]
    if {$method in {replicaof slaveof} && [llength $argv] == 2 &&
        [string tolower [lindex $argv 0]] ne "no" && ![::relay::is_relay [lindex $argv 1]]} {
        lassign $argv host port
        return [list 127.0.0.1 [::relay::port_for $host $port]]
    }
    variable relays
    if {$method eq "client" && [llength $argv] == 2 &&
        [string tolower [lindex $argv 0]] eq "kill" && [info exists relays([lindex $argv 1])]} {
        return [list kill "127.0.0.1:[lindex $relays([lindex $argv 1]) 0]"]
    }
    return $argv
}

# INFO answers the other way round: a replica's master_host/master_port is the master the test
# named, not the relay in between (tests map that port back to one of their servers).
proc ::relay::unrewrite_info {reply} {
    if {[regexp {master_port:(\d+)\r\n} $reply _ port] &&
        [set key [::relay::master_of $port]] ne {}} {
        lassign [split $key :] host mport
        regsub {master_port:\d+\r\n} $reply "master_port:$mport\r\n" reply
        regsub {master_host:[^\r]*\r\n} $reply "master_host:$host\r\n" reply
    }
    return $reply
}

# Stops the relays whose master is no longer one of the suite's servers.
proc ::relay::reap {} {
    variable relays
    set live {}
    foreach srv $::servers {
        lappend live "[dict get $srv host]:[dict get $srv port]"
    }
    foreach key [array names relays] {
        if {[lsearch -exact $live $key] < 0} {
            catch {exec kill -9 [lindex $relays($key) 1]}
            unset relays($key)
        }
    }
}

proc ::relay::wrap {} {
    variable wrapped
    if {$wrapped || [info commands ::redis::__dispatch__raw__] eq {} ||
        [info commands ::start_server] eq {}} {
        return
    }
    set wrapped 1
    rename ::redis::__dispatch__raw__ ::relay::dispatch_raw
    proc ::redis::__dispatch__raw__ {id method argv} {
        set reply [::relay::dispatch_raw $id $method [::relay::rewrite $method $argv]]
        if {[string tolower $method] eq "info"} {
            set reply [::relay::unrewrite_info $reply]
        }
        return $reply
    }
    rename ::start_server ::relay::start_server
    proc ::start_server {options {code undefined}} {
        try {
            uplevel 1 [list ::relay::start_server $options $code]
        } finally {
            ::relay::reap
        }
    }
}

# The suite sources its support files one by one: wrap once the last of ours is in.
trace add execution source leave {apply {args { ::relay::wrap }}}
