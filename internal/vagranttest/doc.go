// Package vagranttest checks the repository's Vagrantfile with Vagrant
// itself. It has no code; its test runs `vagrant validate`.
package vagranttest
