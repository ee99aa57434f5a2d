package finetune

// Version is the SDK's version: the repository's clients/VERSION, which test.sh
// checks it against, and the module's release tag clients/go/vVersion. The
// client sends it in its user agent ("finetune-go/Version").
const Version = "0.2.0"
