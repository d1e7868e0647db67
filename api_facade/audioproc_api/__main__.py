from audioproc_api.cli import main

main()
