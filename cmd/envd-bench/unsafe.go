package main

import "unsafe"

// unsafePointer lets the inotify reader view kernel records in place.
func unsafePointer(p *byte) unsafe.Pointer { return unsafe.Pointer(p) }
