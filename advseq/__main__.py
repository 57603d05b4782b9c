from advseq.cli import main

main()
