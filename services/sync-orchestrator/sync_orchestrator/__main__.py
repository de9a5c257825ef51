from sync_orchestrator.app import main

main()
