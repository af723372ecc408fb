# Tcl's own init.tcl, then the relay's hooks (relay.tcl): scripts/redis-suite points
# TCL_LIBRARY here so that every tclsh of Redis' test suite loads them.
set tcl_library $::env(RELAY_SUITE_TCL_LIBRARY)
source [file join $tcl_library init.tcl]
if {[info exists ::env(RELAY_BIN)]} {
    source [file join [file dirname [info script]] relay.tcl]
}
