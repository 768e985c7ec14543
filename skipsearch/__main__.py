from skipsearch.cli import main

main()
