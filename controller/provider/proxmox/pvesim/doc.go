// Package pvesim is a stateful Proxmox VE API simulator for tests and for
// users who want to try the proxmox provider without a Proxmox cluster.
//
// It serves the part of /api2/json that kthw's proxmox provider calls through
// github.com/luthermonson/go-proxmox, and answers the way Proxmox VE 8 does
// (qemu-server, pve-manager, pve-http-server): the {"data": ...} envelope,
// numbers where Proxmox sends numbers and strings where it sends strings,
// absent fields omitted, 9-part UPIDs, tasks that run for a while and end
// with "OK", "WARNINGS: n" or an error text, config locks during clones,
// 400 {"errors": {...}} with the status text "Parameter verification
// failed.", and 500 errors whose message is in the HTTP status line (the
// only place go-proxmox reads it).
//
// Two ways in: New returns a *Server, an http.Handler with accessors and
// fault knobs; Start runs one on an httptest TLS server for a test and
// returns a *Sim with the URL, CA and credentials a client needs. The
// kthw-pvesim command serves one on a port.
//
// A VM that starts calls the configured Backend with its cloud-init
// settings (ipconfig0, nameserver, ciuser, sshkeys); what the backend
// returns is what the guest agent reports. The default backend reports the
// ipconfig0 address on a NIC with net0's MAC.
package pvesim
