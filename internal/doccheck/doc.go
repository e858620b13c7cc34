// Package doccheck holds the test that keeps the code documenting itself:
// every exported name of the module's packages has a doc comment, and no
// comment cites a document that is not in the repository.
package doccheck
