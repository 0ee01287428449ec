from edgeota.cli.main import main

main()
