from metarun.cli import main

main()
