"""Pictures from runs: contact sheets of SR samples, training curves, and the checkpoint-to-model
loading they (and `tsrx sr`) share. Tables and reports live in tsrx.report."""
