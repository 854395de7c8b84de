from sagan_cli.cli import main

main()
