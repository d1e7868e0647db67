module local.test/audioproc-pause

go 1.24
