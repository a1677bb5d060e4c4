from fractalc.cli import main

main()
