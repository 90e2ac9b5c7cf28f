package hub

import (
	zsync "github.com/pzone/pzone/sync"
)

// Compaction of a data directory's stores, offline (pzh compact). bbolt
// never shrinks its file: pages freed by deletions are reused for later
// writes, but stay on the disk. Compacting copies the live data into a
// new file and puts it in place of the old one.

// StoreFiles are the bbolt files of a hub's data directory.
func StoreFiles() []string { return []string{HubDBName, zsync.FileName, MailboxDBName} }
