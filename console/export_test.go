package console

// ScanWindow is how many index entries an audit page reads at most.
const ScanWindow = scanWindow
