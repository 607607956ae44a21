package projection

// ProcessStart is processStart, for the tests of owner ids.
var ProcessStart = processStart
